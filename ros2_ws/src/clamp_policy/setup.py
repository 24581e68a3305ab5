from glob import glob

from setuptools import find_packages, setup

PACKAGE = "clamp_policy"

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
    description="CLAMP encoders, diffusion policy inference and the 50 Hz safe action-chunk executor.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "chunk_executor = clamp_policy.executor_node:main",
            "inference_node = clamp_policy.inference_node:main",
        ]
    },
)
