"""tfx-reference: the Chicago taxi TFX pipeline, end to end.

Install from the lock (`make venv`), not from install_requires alone: an
unpinned TFX resolve takes many minutes. install_requires names only the
direct dependencies, so Beam workers built with `--setup_file` get them too.
"""

import setuptools

setuptools.setup(
    name='tfx-reference',
    version='0.1.0',
    description='End-to-end TFX reference pipeline on Chicago taxi data',
    python_requires='>=3.10,<3.11',
    packages=['project', 'models', 'data', 'ops', 'components', 'pipeline',
              'lineage', 'continuous_training', 'monitoring', 'serving',
              'delivery', 'ui'],
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
    ],
    entry_points={
        'console_scripts': [
            'taxi-local-run = local_runner:main',
            'taxi-beam-run = beam_runner:main',
        ],
    },
)
