"""What is learned: feature definitions, tf.Transform preprocessing, Keras model.

TFX executors load this package by module path (`models.preprocessing`,
`models.model`), so it must never import `pipeline` or `serving`.
"""
