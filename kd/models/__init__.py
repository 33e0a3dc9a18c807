"""Models: where weights come from and how they run.

`store` resolves a model name (packaged, assembled, hub) to a local folder; `loading` builds bi-encoders,
cross-encoders, cut and static students; `backends` serves a student through torch or ONNX Runtime
(`onnx_export` writes and caches those exports); `runtime` reads the CPU and sets dtypes and threads;
`teacher` is the teacher behind one protocol, and `teacher_corpus` its passage matrix on disk.
"""
