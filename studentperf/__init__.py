"""The contract shared by the inference service, the recorder and the trainer.

`studentperf.v1` holds the code generated from `proto/studentperf/v1/*.proto` (do not edit it:
`make proto` regenerates it). The hand-written modules beside it own the other shared
definitions: the model's feature schema, the Kafka wire envelope and the SQL migrations.
"""
