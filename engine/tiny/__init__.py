"""Tiny random models (checkpoint, networks, classifier, ControlNets) for tests, the demo and a first run with no model.

Written offline from the shipped configs; no weights are downloaded. May import any other part of the engine;
no other part of the engine imports it. Nothing of `bot`, Discord or SQL. Imports nothing itself.
"""
