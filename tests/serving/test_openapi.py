"""serving/openapi.yaml against a real `python -m serving`, fuzzed by schemathesis.

The spec is the contract: TF Serving's REST API as documented (and as its
http_rest_api_handler.cc answers). Three kinds of test keep spec and server
together:
  * the spec is valid OpenAPI 3.1, its schemas valid JSON Schema, and its
    own examples conform to them;
  * every route the server's path regex (serving/rest_api.py `_MODEL_PATH`)
    accepts has a path in the spec, and every spec path reaches the server,
    so neither can drift from the other silently;
  * property-based cases for every operation in the spec (its examples,
    schemathesis's coverage cases, then a fixed number of generated ones,
    valid and invalid) go to a real server on a real trained model, and each
    answer must be no 5xx, a status code, content type and body the spec
    documents for that operation, and no 2xx to a request the spec forbids.

Bounded: generation is derandomized (the same 702 requests on every run,
in CI or not): the spec's examples, the coverage phase on 4 operations,
and MAX_EXAMPLES generated cases for each of the 15 operations, with no
shrinking. That is ~40 s of requests plus ~20 s to start the server on
2 busy cores, once the session's trained model (tests/conftest.py) exists.
"""

import itertools
import os
import re
import shutil
import sre_constants
import sre_parse

import hypothesis
from hypothesis import strategies as st
import jsonschema
import pytest
import referencing
import referencing.jsonschema
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance
from schemathesis.specs.openapi.checks import negative_data_rejection
from schemathesis.specs.openapi.checks import response_schema_conformance
from schemathesis.specs.openapi.checks import status_code_conformance
import yaml

from serving import rest_api
from tests import helpers


SPEC = os.path.join(helpers.REPO, 'serving', 'openapi.yaml')
# Generated cases per operation (15 operations), on top of the spec's own
# examples and schemathesis's coverage cases.
MAX_EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance,
          content_type_conformance, response_schema_conformance,
          # a request the spec forbids (e.g. a non-string signature_name,
          # which TF Serving refuses) must not be answered 2xx
          negative_data_rejection]
MODEL = 'taxi'
LABELS = {'stable': 1}  # --model_config_file version_labels

CONFIG = schemathesis.Config.from_dict({
    'seed': 20240601,
    'generation': {
        'max-examples': MAX_EXAMPLES,
        'deterministic': True,  # hypothesis derandomize: same cases each run
        'database': 'none',
        'no-shrink': True,  # a failure costs no extra requests
        'mode': 'all',  # positive and negative cases
    },
    'phases': {'stateful': {'enabled': False}},
    # schemathesis's coverage phase (boundary and wrong-type values for
    # every field: ~40 cases for a GET, 100-200 for a POST) runs on the
    # unversioned status, metadata, predict and classify operations. The
    # version and label variants, and :regress (the same handler as
    # :classify), take the same bodies through the same code: they get the
    # spec's examples and the generated cases only.
    'operations': [{'include-path-regex': '/(versions|labels)/|:regress$',
                    'phases': {'coverage': {'enabled': False}}}],
})
schema = schemathesis.openapi.from_path(SPEC, config=CONFIG)


# --- the spec itself ------------------------------------------------------

def _raw_spec():
  with open(SPEC) as f:
    return yaml.safe_load(f)


RAW_SPEC = _raw_spec()


REGISTRY = referencing.Registry().with_resource(
    'spec.yaml', referencing.Resource.from_contents(
        RAW_SPEC, default_specification=referencing.jsonschema.DRAFT202012))


def validator(ref: str) -> jsonschema.Draft202012Validator:
  """A JSON Schema validator for the spec's `ref` ('#/components/...')."""
  return jsonschema.Draft202012Validator({'$ref': 'spec.yaml' + ref},
                                         registry=REGISTRY)


def _refs(node):
  if isinstance(node, dict):
    if isinstance(node.get('$ref'), str):
      yield node['$ref']
    for value in node.values():
      yield from _refs(value)
  elif isinstance(node, list):
    for value in node:
      yield from _refs(value)


def test_spec_is_valid_openapi_with_valid_schemas_and_examples():
  raw = _raw_spec()
  assert raw['openapi'].startswith('3.1')
  schema.validate()  # against the official OpenAPI 3.1 meta-schema
  for body in raw['components']['schemas'].values():
    jsonschema.Draft202012Validator.check_schema(body)
  resolver = REGISTRY.resolver()
  for ref in set(_refs(raw)):
    assert ref.startswith('#/'), ref
    resolver.lookup('spec.yaml' + ref)  # raises if it points at nothing
  checked = 0
  for name, parameter in raw['components']['parameters'].items():
    for example in parameter['examples'].values():
      validator(f'#/components/parameters/{name}/schema').validate(
          example['value'])
      checked += 1
  for group in ('requestBodies', 'responses'):
    for name, item in raw['components'][group].items():
      for media, content in item.get('content', {}).items():
        assert media == 'application/json', (group, name, media)
        ref = content['schema']['$ref']
        examples = [e['value'] for e in content.get('examples', {}).values()]
        examples += [content['example']] if 'example' in content else []
        for example in examples:
          validator(ref).validate(example)
          checked += 1
  assert checked >= 15
  # Every operation documents its errors with the one error body.
  for path, methods in raw['paths'].items():
    for method, operation in methods.items():
      codes = set(operation['responses'])
      assert {'200', '400', '404'} <= codes, (method, path)
      for code in codes - {'200'}:
        assert operation['responses'][code]['$ref'] in {
            '#/components/responses/' + n for n in (
                'BadRequest', 'NotFound', 'RequestTimeout', 'LengthRequired',
                'Unavailable')}, (method, path, code)


def _sample(items) -> str:
  """A character that the character class `items` (sre_parse IN) matches."""
  negate = items and items[0][0] == sre_constants.NEGATE
  for ch in 'x7':
    hit = False
    for op, arg in items:
      if op == sre_constants.LITERAL:
        hit |= ord(ch) == arg
      elif op == sre_constants.RANGE:
        hit |= arg[0] <= ord(ch) <= arg[1]
      elif op == sre_constants.CATEGORY:
        hit |= {sre_constants.CATEGORY_DIGIT: ch.isdigit(),
                sre_constants.CATEGORY_WORD: ch.isalnum()}[arg]
      elif op != sre_constants.NEGATE:
        raise NotImplementedError(op)
    if hit != bool(negate):
      return ch
  raise AssertionError(f'no sample character for {items}')


def _expand(parsed) -> set:
  """Every string a path regex accepts, one sample per repeated class."""
  out = {''}
  for op, arg in parsed:
    if op == sre_constants.LITERAL:
      options = {chr(arg)}
    elif op == sre_constants.IN:
      options = {_sample(arg)}
    elif op == sre_constants.AT:
      options = {''}
    elif op == sre_constants.SUBPATTERN:
      options = _expand(arg[-1])
    elif op == sre_constants.BRANCH:
      options = set().union(*(_expand(alt) for alt in arg[1]))
    elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
      low, _, sub = arg
      once = _expand(sub)
      options = ({''} | once) if low == 0 else {s * low for s in once}
    else:
      raise NotImplementedError(f'{op} in {rest_api._MODEL_PATH.pattern}')
    out = {a + b for a, b in itertools.product(out, options)}
  return out


def _template_regex(template: str):
  parts = re.split(r'\{[^}]+\}', template)
  return re.compile('^' + '[^/:]+'.join(map(re.escape, parts)) + '$')


def test_every_server_route_is_in_the_spec_and_back():
  spec_paths = list(RAW_SPEC['paths'])
  server_paths = _expand(sre_parse.parse(rest_api._MODEL_PATH.pattern))
  assert len(server_paths) >= 15, server_paths
  missing = sorted(p for p in server_paths
                   if not any(_template_regex(t).match(p) for t in spec_paths))
  assert not missing, f'server routes without a path in {SPEC}: {missing}'
  for template in spec_paths:
    concrete = re.sub(r'\{[a-z_]+\}', lambda m: '7' if m[0] == '{version}'
                      else 'x', template)
    assert rest_api._MODEL_PATH.match(concrete), (
        f'{template} in the spec is no route of serving/rest_api.py')
  # the methods too: GET reads status and metadata, POST runs a signature
  for template, methods in RAW_SPEC['paths'].items():
    want = 'post' if ':' in template.rsplit('/', 1)[-1] else 'get'
    assert list(methods) == [want], (template, list(methods))


# --- the fuzzer against a real server -------------------------------------

@pytest.fixture(scope='module')
def spec_server(tmp_path_factory, trained_model):
  """The trained taxi model as version 1, labelled stable."""
  root = tmp_path_factory.mktemp('openapi')
  base = root / MODEL
  shutil.copytree(trained_model.serving_model_dir, base / '1')
  config = root / 'models.config'
  config.write_text(
      'model_config_list { config {\n'
      f'  name: "{MODEL}" base_path: "{base}" model_platform: "tensorflow"\n'
      + ''.join(f'  version_labels {{ key: "{k}" value: {v} }}\n'
                for k, v in LABELS.items())
      + '} }\n')
  server = helpers.Server(None, extra=['--model_config_file', str(config)])
  yield server
  server.stop()


@pytest.fixture(scope='module')
def http():
  with requests.Session() as session:
    yield session


# The two hooks below steer generated cases at the served model; they touch
# only values the spec allows, so that a negative (spec-violating) case
# stays negative, and negative_data_rejection keeps its meaning.
PARAMETERS = {name: validator(f'#/components/parameters/{name}/schema')
              for name in RAW_SPEC['components']['parameters']}
PREDICT_REQUEST = validator('#/components/schemas/PredictRequest')


# Random model names and labels mostly miss (404s); as often, the case is
# pointed at the served model, its versions and labels, so that generated
# bodies reach the signatures and metadata is read for real.
@schema.hook
def flatmap_path_parameters(context, path_parameters):
  del context
  if not all(PARAMETERS[k].is_valid(v) for k, v in path_parameters.items()):
    return st.just(path_parameters)
  served = dict(path_parameters, model_name=MODEL)
  options = [path_parameters, served]
  if 'version' in path_parameters:
    options.append(dict(served, version=1))
  if 'label' in path_parameters:
    options.append(dict(served, label='stable'))
  return st.sampled_from(options)


# Half the generated predict bodies put their tensor into one raw feature of
# an otherwise valid serving_raw request (the spec's rowRaw example), so
# wrong types, shapes and values reach the signature's real inputs.
def _raw_row():
  examples = RAW_SPEC['components']['requestBodies']['Predict'][
      'content']['application/json']['examples']
  return examples['rowRaw']['value']['instances'][0]


RAW_ROW = _raw_row()


def _into_raw_feature(body, feature):
  if 'instances' in body:
    rows = body['instances']
    value = rows[0] if isinstance(rows, list) and rows else rows
    return {'signature_name': 'serving_raw',
            'instances': [dict(RAW_ROW, **{feature: value})]}
  columns = {k: [v] for k, v in RAW_ROW.items()}
  columns[feature] = body.get('inputs')
  return {'signature_name': 'serving_raw', 'inputs': columns}


@schema.hook
def flatmap_body(context, body):
  if (not context.operation.path.endswith(':predict')
      or not PREDICT_REQUEST.is_valid(body)):
    return st.just(body)
  return st.one_of(st.just(body), st.sampled_from(sorted(RAW_ROW)).map(
      lambda feature: _into_raw_feature(body, feature)))


@pytest.mark.integration
@schema.parametrize()
@hypothesis.settings(max_examples=MAX_EXAMPLES, derandomize=True,
                     deadline=None, database=None,
                     phases=[hypothesis.Phase.explicit,
                             hypothesis.Phase.generate],
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_server_conforms_to_openapi_spec(case, spec_server, http):
  case.call_and_validate(base_url=spec_server.url, session=http,
                         checks=CHECKS, timeout=60)
