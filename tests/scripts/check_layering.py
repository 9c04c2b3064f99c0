#!/usr/bin/env python3
"""The model registry's layering, checked on the sources (ctest: lint.layering).

- Nothing outside titan/models/<name>/ includes a header of that folder: the trainer, the
  converters, the distributed and component code and the command line reach a model only
  through titan/models/model.h and titan/models/registry.h.
- A family's folder includes no other family's folder; folders without a spec.cpp
  (titan/models/common/) hold code the families share and may be included by them alone.
- titan/models/models.def registers exactly the folders that define a spec (spec.cpp).
- components/, distributed/, models/, kernels/, common/ and generate/ never see the job config
  (no titan/config/job_config.h, no config::JobConfig): they take typed options, which
  titan/train/options.cpp (and validate.cpp's checks) build from it.
- Nothing outside titan/config/, titan/train/options.cpp and titan/train/validate.cpp reads a
  job-config key by its string (a get_*/is_default call on a "section.key" literal or a key put
  together at run time): the trainer and the commands read typed options. Command-line options
  of the commands ("max-new-tokens") are not job-config keys.

The check first runs on a small tree with one violation of each rule and fails unless it finds
them, so a check that finds nothing cannot pass by accident.
"""
import os
import re
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NO_CONFIG = ("components", "distributed", "models", "kernels", "common", "generate")
CONFIG = re.compile(r'#\s*include\s*"titan/config/job_config\.h"|\bJobConfig\b')
INCLUDE = re.compile(r'^\s*#\s*include\s*"titan/models/([A-Za-z0-9_]+)/', re.M)
REGISTERED = re.compile(r'^\s*TITAN_MODEL\(\s*([A-Za-z0-9_]+)\s*\)', re.M)
SOURCE_DIRS = ["titan", "apps"]
KEY_READ = re.compile(r'\.(?:get_\w+|is_default)\(\s*(?:"[a-z_]+\.[a-z0-9_.]+"|std::string\()')
KEY_READERS = ("titan/train/options.cpp", "titan/train/validate.cpp")


def sources(root):
    for top in SOURCE_DIRS:
        for folder, _, files in os.walk(os.path.join(root, top)):
            for f in files:
                if f.endswith((".h", ".cpp", ".cu", ".cuh")):
                    yield os.path.join(folder, f)


def violations(root):
    out = []
    models_dir = os.path.join(root, "titan", "models")
    families = {d for d in os.listdir(models_dir) if os.path.isfile(os.path.join(models_dir, d, "spec.cpp"))}
    for path in sources(root):
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        parts = rel.split("/")
        owner = parts[2] if len(parts) > 3 and parts[:2] == ["titan", "models"] else None
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        if len(parts) > 2 and parts[0] == "titan" and parts[1] in NO_CONFIG and CONFIG.search(text):
            out.append(f"{rel} sees the job config: take typed options built in titan/train/options.cpp")
        if not rel.startswith("titan/config/") and rel not in KEY_READERS:
            for m in KEY_READ.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                out.append(f"{rel}:{line} reads a job-config key by its string ({m.group(0)}...): read it in "
                           "titan/train/options.cpp into a typed option")
        for family in INCLUDE.findall(text):
            if owner is None:
                out.append(f"{rel} includes titan/models/{family}/: use titan/models/model.h or registry.h")
            elif owner != family and family in families:
                out.append(f"{rel} (model {owner}) includes titan/models/{family}/: families stay apart")
    with_spec = sorted(families)
    with open(os.path.join(models_dir, "models.def"), encoding="utf-8") as f:
        registered = sorted(REGISTERED.findall(f.read()))
    for d in sorted(set(with_spec) - set(registered)):
        out.append(f"titan/models/{d}/spec.cpp is not registered in titan/models/models.def")
    for d in sorted(set(registered) - set(with_spec)):
        out.append(f"titan/models/models.def registers {d}, which has no titan/models/{d}/spec.cpp")
    return out


def self_test():
    with tempfile.TemporaryDirectory() as t:
        def write(rel, text):
            p = os.path.join(t, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(text)
        write("titan/train/trainer.cpp", '#include "titan/models/alpha/model.h"\n')
        write("titan/models/alpha/spec.cpp", '#include "titan/models/beta/args.h"\n#include "titan/models/shared/x.h"\n')
        write("titan/models/shared/x.h", "\n")
        write("titan/distributed/y.cpp", '#include "titan/models/shared/x.h"\n')
        write("titan/models/beta/spec.cpp", "\n")
        write("titan/models/models.def", "TITAN_MODEL(alpha)\nTITAN_MODEL(gamma)\n")
        write("apps/ok.cpp", '#include "titan/models/registry.h"\n#include "titan/config/job_config.h"\n')
        write("titan/components/z.cpp", 'void f(const titan::config::JobConfig& cfg);\n')
        write("titan/train/loop.cpp", 'int n = cfg.get_int("training.steps");\nauto k = c.get_int(std::string("a.") + x);\n')
        write("titan/train/options.cpp", 'int n = cfg.get_int("training.steps");\n')
        write("titan/config/schema.cpp", 'bool d = cfg.is_default("training.gc_freq");\n')
        write("apps/cmd.cpp", 'int n = o.get_int("max-new-tokens", 64);\n')
        found = violations(t)
        want = ["trainer.cpp includes titan/models/alpha/", "(model alpha) includes titan/models/beta/",
                "y.cpp includes titan/models/shared/", "z.cpp sees the job config",
                "beta/spec.cpp is not registered", "registers gamma", "loop.cpp:1 reads a job-config key",
                "loop.cpp:2 reads a job-config key"]
        missing = [w for w in want if not any(w in v for v in found)]
        if missing or len(found) != len(want):
            print("lint.layering self-test failed: expected", want, "found", found)
            return False
    return True


def main():
    if not self_test():
        return 1
    bad = violations(ROOT)
    for v in bad:
        print("FAIL", v)
    if bad:
        return 1
    print("PASS nothing outside titan/models/<name>/ includes a model family's headers; models.def lists every family; "
          "components/, distributed/, models/, kernels/, common/ and generate/ never see the job config; only "
          "titan/config/ and the option builders read its keys by string")
    return 0


if __name__ == "__main__":
    sys.exit(main())
