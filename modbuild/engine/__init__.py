"""A training engine in the FleetX manner: a `BasicModule` of hooks, an `EagerEngine` that strings them together,
driven by a validated YAML config (`modbuild train CONFIG.yaml -o Engine.max_steps=100`).

Modules, one job each: `config` (schema, overrides), `data` (token windows, resumable order), `build` (the
network, TP split, `Model.config` checks), `distributed` (fleet set-up), `module` (hooks), `engine` (the loop),
`checkpoint` (atomic, verified saves of safetensors and JSON), `output` (an output dir holding an earlier run),
`metrics` (CSV, VisualDL, PNG), `cli` (`modbuild train` / `evaluate`), `launch` (several processes).

Nothing is imported here: `modbuild convert` registers the `train` / `evaluate` commands through `cli` on a core
install, which has neither pydantic nor paddle.
"""
