#!/usr/bin/env bash
# The HTTP API with curl. Start the server first:  omniserve serve   (add --api-key KEY to require a key)
# Usage: samples/curl_examples.sh [BASE_URL]   (default http://localhost:8000); export API_KEY=... if set.
set -euo pipefail
BASE=${1:-http://localhost:8000}
HERE=$(cd "$(dirname "$0")" && pwd)
AUTH=(-H "Authorization: Bearer ${API_KEY:-none}")
JSON=(-H "Content-Type: application/json")

echo "== health and models"
curl -s "$BASE/health"; echo
curl -s "${AUTH[@]}" "$BASE/v1/models"; echo

echo "== chat"
curl -s "${AUTH[@]}" "${JSON[@]}" "$BASE/v1/chat/completions" -d '{
  "model": "omniserve-demo",
  "messages": [{"role": "user", "content": "Hello! Who are you?"}],
  "max_tokens": 32, "temperature": 0.7, "seed": 1
}'; echo

echo "== streaming chat (server-sent events, ends with data: [DONE])"
curl -sN "${AUTH[@]}" "${JSON[@]}" "$BASE/v1/chat/completions" -d '{
  "messages": [{"role": "user", "content": "Count to five"}],
  "max_tokens": 16, "stream": true, "stream_options": {"include_usage": true}
}'

echo "== upload a file, then use it by id"
FILE_ID=$(curl -s "${AUTH[@]}" "$BASE/v1/files" -F purpose=user_data -F "file=@$HERE/notes.txt" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
echo "uploaded notes.txt as $FILE_ID"
curl -s "${AUTH[@]}" "${JSON[@]}" "$BASE/v1/chat/completions" -d '{
  "messages": [{"role": "user", "content": [
    {"type": "file", "file": {"file_id": "'"$FILE_ID"'"}},
    {"type": "text", "text": "What happened on Wednesday?"}]}],
  "max_tokens": 32
}'; echo

echo "== an image as a data URL (the text-only demo model answers 400: this model accepts text only)"
IMAGE_URL="data:image/png;base64,$(base64 -w0 "$HERE/image.png")"
curl -s "${AUTH[@]}" "${JSON[@]}" "$BASE/v1/chat/completions" -d '{
  "messages": [{"role": "user", "content": [
    {"type": "image_url", "image_url": {"url": "'"$IMAGE_URL"'"}},
    {"type": "text", "text": "What is in this picture?"}]}]
}'; echo

echo "== completions"
curl -s "${AUTH[@]}" "${JSON[@]}" "$BASE/v1/completions" -d '{"prompt": "The lighthouse", "max_tokens": 16}'; echo

echo "== metrics (Prometheus)"
curl -s "$BASE/metrics" | grep -E '^omniserve_(num_requests|kv_blocks|generation_tokens_total)'
