"""pip's --require-hashes mode needs a plain `name==ver` line beside `name[extra]==ver` (pip issue 9644).

    python .ci/lock_extras.py requirements.lock     (rewrites the file in place; `make lock` runs it)
"""

import re
import sys

path = sys.argv[1]
with open(path) as f:
    lines = f.read().split("\n")
out, i = [], 0
while i < len(lines):
    line = lines[i]
    m = re.match(r"^([A-Za-z0-9_.-]+)\[[^\]]+\](==\S+) \\$", line)
    if m:
        block = [line]
        j = i + 1
        while j < len(lines) and lines[j].startswith("    --hash"):
            block.append(lines[j])
            j += 1
        out.extend(block)
        out.append(f"{m.group(1)}{m.group(2)} \\")
        out.extend(block[1:])
        i = j
        continue
    out.append(line)
    i += 1
with open(path, "w") as f:
    f.write("\n".join(out))
