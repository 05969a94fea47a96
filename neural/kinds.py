"""The neural pool's kinds and their payload fields, without numpy: the launcher and
the CLI name them (``orchflow kinds``, on-demand start) and must stay light."""

#: What ``orchflow kinds`` shows for each neural kind.
PAYLOAD_FIELDS = {
    "neural.create": "name, layers: [inputs, hidden..., outputs], activation?, output_activation?, "
                     "shortcut?: bool, seed?",
    "neural.load": "name, fann: FANN file text, meta?, shared?: bool",
    "neural.run": "name, input: vector or list of vectors, version?",
    "neural.train": "name, data_text: FANN data file text (or data: {inputs, outputs}), max_epochs?, "
                    "desired_error?, algorithm?, cascade_neurons?, report_every?, version?",
    "neural.list": "{}",
    "neural.stats": "{}",
    "neural.train_router": "max_records? (project orchflow only)",
}
