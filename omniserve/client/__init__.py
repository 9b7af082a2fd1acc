"""The omniserve Python SDK: `Client` (sync) and `AsyncClient` over httpx, for `omniserve serve`.

    from omniserve.client import Client
    client = Client("http://localhost:8000")                  # api_key=... when the server has one
    print(client.chat("Describe this picture", images=["samples/image.png"]).text)
    for text in client.chat_stream("Tell me a story", max_tokens=64):
        print(text, end="", flush=True)

Errors the server reports raise `OmniServeError` carrying its status, message, param and code.
"""

from omniserve.client.async_client import AsyncClient
from omniserve.client.errors import OmniServeError
from omniserve.client.sync_client import Client
from omniserve.client.types import ChatResult, CompletionResult, FileObject

__all__ = ["AsyncClient", "ChatResult", "Client", "CompletionResult", "FileObject", "OmniServeError"]
