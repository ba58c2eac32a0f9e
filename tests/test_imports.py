"""`import_leaf`: one module of a heavy package without the package's `__init__` (English uses it for nltk)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

TEXT = "Hello, world! It's 3:30pm... I'm :) #tag @user http://x.org/a?b=c don't U.S.A. e-mail co-op"


def run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_english_tokenizer_loads_without_nltk_package_and_matches_it():
    # In a fresh interpreter: English tokenising leaves neither nltk nor what its __init__ pulls in (scikit-learn,
    # SciPy, pandas) imported, and tokenises exactly as nltk's TweetTokenizer, which still imports normally after.
    out = run(f"""
        import sys
        from gsvkit.text.g2p.en import _tokenizer
        ours = _tokenizer()({TEXT!r})
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("nltk", "sklearn", "pandas", "scipy"))
        from nltk.tokenize import TweetTokenizer
        import nltk.internals  # the whole package works after the light import (its submodules re-imported)
        theirs = TweetTokenizer().tokenize({TEXT!r})
        print(heavy, ours == theirs, len(ours), callable(nltk.internals.overridden))
    """)
    heavy, same, n, whole_ok = out.rsplit(" ", 3)
    assert (heavy, same, whole_ok) == ("[]", "True", "True"), out
    assert int(n) > 15  # the text really was split (URL, emoticon, hashtag and contractions kept whole)


def test_import_leaf_is_an_ordinary_import_when_the_package_is_loaded():
    out = run("""
        import nltk
        from gsvkit.utils.imports import import_leaf
        casual = import_leaf("nltk.tokenize.casual")
        import sys
        print(casual is sys.modules["nltk.tokenize.casual"], hasattr(sys.modules["nltk"], "download"))
    """)
    assert out == "True True"  # the real package (a stand-in has no download)


def test_import_leaf_names_a_missing_package():
    out = run("""
        from gsvkit.utils.imports import import_leaf
        try:
            import_leaf("no_such_pkg_xyz.sub.leaf")
        except ModuleNotFoundError as e:
            print("missing:", e.name)
    """)
    assert out == "missing: no_such_pkg_xyz"
