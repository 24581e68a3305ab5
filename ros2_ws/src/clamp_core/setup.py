from glob import glob

from setuptools import find_packages, setup

PACKAGE = "clamp_core"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/config/profiles", glob("config/profiles/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="CLAMP-on-ALOHA developers",
    maintainer_email="engineering@clamp-aloha.dev",
    description="The shared ROS-free core of the CLAMP packages (rig, profiles, safety, bags, config), ROS helpers.",
    license="Apache-2.0",
)
