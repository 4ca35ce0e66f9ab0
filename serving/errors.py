"""Request errors, each with the TF Serving status code it maps to."""


class ServingError(Exception):
  """Base: a request the server answers with an error, never a crash."""
  grpc_code = 'INTERNAL'
  http_status = 500


class NotFound(ServingError):
  """Unknown model, version or label."""
  grpc_code = 'NOT_FOUND'
  http_status = 404


class BadRequest(ServingError):
  """Malformed input: wrong shape, dtype, JSON, missing input."""
  grpc_code = 'INVALID_ARGUMENT'
  http_status = 400


class FailedPrecondition(ServingError):
  """The request does not fit the model, e.g. an unknown signature."""
  grpc_code = 'FAILED_PRECONDITION'
  http_status = 400


class Unavailable(ServingError):
  """The server cannot take the request now, e.g. the batch queue is full."""
  grpc_code = 'UNAVAILABLE'
  http_status = 503
