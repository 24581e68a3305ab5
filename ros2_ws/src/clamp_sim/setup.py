from glob import glob

from setuptools import find_packages, setup

PACKAGE = "clamp_sim"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/config", glob("config/*.yaml")),
        ("share/" + PACKAGE + "/launch", glob("launch/*.py")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="CLAMP-on-ALOHA developers",
    maintainer_email="engineering@clamp-aloha.dev",
    description="Simulated bimanual ALOHA (MuJoCo) speaking the robot's xs_sdk, RealSense and TF interfaces.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "sim_node = clamp_sim.sim_node:main",
            "generate = clamp_sim.generate:main",
            "evaluate = clamp_sim.evaluate:main",
            "bench = clamp_sim.bench:main",
        ]
    },
)
