"""The compose project's example client: one chat completion from model-runner through the OpenAI SDK.

The SDK takes the server from OPENAI_BASE_URL and the (unchecked) key from OPENAI_API_KEY, so the code is
the same as against OpenAI's API; only MODEL names a local model.
"""

import os

from openai import OpenAI

client = OpenAI()
reply = client.chat.completions.create(
    model=os.environ.get("MODEL", "ai/smollm2"),
    messages=[{"role": "user", "content": "In one sentence, why is the sky blue?"}],
    max_tokens=64,
)
print(reply.choices[0].message.content)
