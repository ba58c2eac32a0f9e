"""Text frontend throughput: phones per second for each language (clean_text) and for the mixed inference path.

Run: python benchmarks/text.py [--repeat 3]. The first call of each language (dictionary and model loading) is
timed separately as "load".
"""

from __future__ import annotations

import argparse
import time

from gsvkit.text import clean_text, get_phones

SAMPLES = {
    "zh": "今天天气很好，我们去公园散步吧。会议定在下午3:30开始，预计持续到17:45。"
    "这台电脑售价5999元，打八五折后便宜了不少。",
    "en": "The quick brown fox jumps over the lazy dog. It costs $19.99, and the meeting starts at 9:45 tomorrow.",
    "ja": "こんにちは、今日はいい天気ですね。東京タワーに行きましょう！日本語の発音は難しいですか？",
    "ko": "안녕하세요, 만나서 반갑습니다. 오늘 날씨가 정말 좋네요. 한국어 음성 합성을 시험하고 있습니다.",
    "yue": "你好，我哋去飲茶啦。我哋聽日一齊去睇戲，好唔好？香港嘅夜景好靚。",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    for lang, text in SAMPLES.items():
        t0 = time.perf_counter()
        clean_text(text, lang)
        load = time.perf_counter() - t0
        t0 = time.perf_counter()
        n = 0
        for _ in range(args.repeat):
            n += len(clean_text(text, lang)[0])
        dt = time.perf_counter() - t0
        print(f"{lang:4s} load {load:6.2f} s   {n / dt:9.0f} phones/s")
    text = "我是Alice，我爱AI和GPU。今天我们用ChatGPT写code，效率提高了50%。"
    get_phones(text, "auto")
    t0 = time.perf_counter()
    n = sum(len(get_phones(text, "auto")[0]) for _ in range(args.repeat))
    print(f"auto (mixed zh/en, with language detection) {n / (time.perf_counter() - t0):9.0f} phones/s")


if __name__ == "__main__":
    main()
