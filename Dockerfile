# The image every task of the pipeline (any problem) runs in on Vertex AI Pipelines
# (vertex_runner.py --image). Build and push it with the tag you compile with:
#   docker build -t REGION-docker.pkg.dev/PROJECT/tfx-reference/pipeline:TAG .
#   docker push REGION-docker.pkg.dev/PROJECT/tfx-reference/pipeline:TAG
# vertex_runner.py derives TAG from a digest of the files this build copies
# (src-...; .dockerignore applied) and prints these two commands: Vertex's
# cache keys on the image name, not its digest, so a reused tag such as
# `latest` could serve results of old code.
# The project's machines have no Docker engine, so this file is not built
# here; tests/runners/test_vertex_runner.py checks it against the code.

# TFX 1.16 and its whole stack (TensorFlow, Beam, TFDV, TFT, TFMA, and
# kfp-pipeline-spec for Vertex's entry point); must match pipeline/configs.py
# TFX_BASE_IMAGE. Its other versions are TFX's, not requirements.lock's.
FROM tensorflow/tfx:1.16.0

WORKDIR /opt/tfx-reference
# Same inputs, same model: Beam's combine order follows Python's hash seed
# (ops/reproducible.py), so every task runs with a fixed one.
ENV PYTHONHASHSEED=0
# Only what the tasks import (see .dockerignore): models/, pipeline/, schema/.
COPY . .

# Keras as locked: TFX's Keras model code breaks on later Keras 3 releases.
# Then this project, without dependencies: the base image has them all.
RUN pip install --no-cache-dir --no-deps \
      $(grep -E '^(keras|tf-keras)==' requirements.lock) \
 && pip install --no-cache-dir --no-deps .

# Every problem's curated schema at its content address, where the compiled
# pipeline imports it from (pipeline.cache_keys.image_schema_file, same
# sha256 prefix).
RUN for schema in schema/*/schema.pbtxt; do \
      digest=$(sha256sum "$schema" | cut -c1-16) \
      && mkdir -p schema-snapshots/$digest \
      && cp "$schema" schema-snapshots/$digest/schema.pbtxt || exit 1; \
    done

# Fail the build, not a pipeline run, when the base image's TFX or Keras is
# not the locked one, or an executor of ours cannot be imported.
RUN python -c "import keras, tfx.version; \
locked = open('requirements.lock').read().split(); \
assert 'tfx==' + tfx.version.__version__ in locked, tfx.version.__version__; \
assert 'keras==' + keras.__version__ in locked, keras.__version__; \
import models.model, components.pusher, components.validation_gate"
