from glob import glob

from setuptools import find_packages, setup

PACKAGE = "clamp_perception"

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
    description="RGB-D fusion into a world point cloud and CLAMP virtual views (depth + xyz).",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "perception_node = clamp_perception.perception_node:main",
            "preview_views = clamp_perception.preview:main",
            "perception_bench = clamp_perception.bench:main",
        ]
    },
)
