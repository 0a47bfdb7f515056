#!/usr/bin/env python3
"""Replaces the section between <!-- NAME:start --> and <!-- NAME:end --> in FILE with
SECTION (which carries both markers), or appends SECTION if FILE has none.
Usage: report-section.py FILE NAME SECTION. The benchmark scripts write BENCHMARKS.md
with it."""
import re
import sys

path, name, section = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(path).read()
pat = re.compile(r"<!-- %s:start -->.*?<!-- %s:end -->" % (re.escape(name), re.escape(name)), re.S)
text = pat.sub(lambda _: section, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + section + "\n"
open(path, "w").write(text)
