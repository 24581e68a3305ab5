from glob import glob

from setuptools import find_packages, setup

PACKAGE = "clamp_bringup"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/config", glob("config/*.yaml") + glob("config/*.xml")),
        ("share/" + PACKAGE + "/config/xs_modes", glob("config/xs_modes/*.yaml")),
        ("share/" + PACKAGE + "/config/xs_motors", glob("config/xs_motors/*.yaml")),
        ("share/" + PACKAGE + "/launch", glob("launch/*.py")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="CLAMP-on-ALOHA developers",
    maintainer_email="engineering@clamp-aloha.dev",
    description="ALOHA profiles, node graph, launch, arm driver, teleop, recorder, replay.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "arm_driver = clamp_bringup.arm_driver_node:main",
            "teleop = clamp_bringup.teleop_node:main",
            "recorder = clamp_bringup.recorder_node:main",
            "replay = clamp_bringup.replay:main",
            "run = clamp_bringup.run:main",
            "task = clamp_bringup.task_node:main",
            "set_task = clamp_bringup.set_task:main",
            "shutdown_guard = clamp_bringup.shutdown_guard:main",
        ]
    },
)
