"""Entrypoint of the scoring service: `serve run serve.app:app` from the repository root, or through
`serve/config.yaml` (which names the builder ``paylake.serving.app:build_app`` directly)."""

from paylake.serving.app import build_app

app = build_app({})
