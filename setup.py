"""tfx-reference: a TFX pipeline, end to end, for every problem under models/.

Install from the lock (`make venv`), not from install_requires alone: an
unpinned TFX resolve takes many minutes. install_requires names only the
direct dependencies, so Beam workers built with `--setup_file` get them too.
"""

import setuptools

setuptools.setup(
    name='tfx-reference',
    version='0.1.0',
    description='End-to-end TFX reference pipeline (MLOps level 2)',
    python_requires='>=3.10,<3.11',
    # Every package, problem folders (models/<name>/) included: TFX's
    # executors and Beam's workers import them by module path.
    packages=setuptools.find_packages(
        include=['project', 'models', 'models.*', 'data', 'ops',
                 'components', 'pipeline', 'lineage', 'continuous_training',
                 'monitoring', 'serving', 'delivery', 'ui']),
    package_data={'ui': ['templates/*.j2'],
                  'components': ['model_card_templates/*.j2']},
    py_modules=['local_runner', 'beam_runner'],
    install_requires=[
        'tfx==1.16.0',
        'tensorflow==2.16.2',
        'keras==3.6.0',
        'tf-keras==2.16.0',
        'apache-beam[gcp]==2.59.0',
        'protobuf==3.20.3',
        # Imported directly by the project's code (requirements.in says
        # where); the lock's pins.
        'jinja2==3.1.6',
        'orjson==3.13.0',
        'scipy==1.12.0',
        'numpy==1.26.4',
        'grpcio==1.85.3',
        'psutil==7.2.2',
        'tenacity==9.1.4',
    ],
    entry_points={
        'console_scripts': [
            'tfx-reference-run = local_runner:main',
            'tfx-reference-beam-run = beam_runner:main',
        ],
    },
)
