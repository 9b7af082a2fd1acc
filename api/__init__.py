"""The OpenAI-compatible HTTP server (`omniserve serve`), installed as `omniserve.api`.

`app.build_app(async_omni, server_config)` wires the routes (chat, completions, files, metrics) to an
`omniserve.async_omni.AsyncOmni`; `serve.run_serve(args)` is the CLI entry point.
"""
