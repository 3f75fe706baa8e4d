#!/usr/bin/env python3
"""Convert chatterbot-corpus English YAML files into JSONL chats (one conversation per line:
[{"role": "user", "content": ...}, {"role": "assistant", "content": ...}, ...]).
Usage: corpus_to_jsonl.py OUT.jsonl FILE.yml [FILE.yml ...]"""
import json
import sys

import yaml


def turns(conv):
    """Alternate user/assistant over a conversation's utterances."""
    out = []
    for i, text in enumerate(conv):
        if not isinstance(text, str):
            text = str(text)
        text = text.strip()
        if not text:
            continue
        out.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return out


def main():
    out_path, files = sys.argv[1], sys.argv[2:]
    n = 0
    with open(out_path + ".part", "w", encoding="utf-8") as out:
        for path in files:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
            for conv in data.get("conversations") or []:
                chat = turns(conv)
                if len(chat) >= 2:
                    out.write(json.dumps(chat, ensure_ascii=False) + "\n")
                    n += 1
    import os
    os.replace(out_path + ".part", out_path)
    print(f"{out_path}: {n} conversations from {len(files)} files")


if __name__ == "__main__":
    main()
