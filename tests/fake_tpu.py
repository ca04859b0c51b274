"""A fake `gcloud` for the TPU launcher's tests, and simulated TPU hosts.

`install(bin_dir)` puts an executable `gcloud` on a directory meant to go
first on PATH; it calls `main` here. The fake

  * records every call's argv as a JSON line in $FAKE_GCLOUD_LOG;
  * answers `describe` with the states the test writes to
    $FAKE_GCLOUD_STATE, one a call (the last repeats; MISSING answers
    NOT_FOUND as gcloud does);
  * `storage cp SRC gs://...`: into the directory $FAKE_GCS, or, without
    it, into the GCS emulator at $STORAGE_EMULATOR_HOST;
  * `ssh --worker=all|N --command=CMD`: runs CMD with bash once per host
    under $FAKE_TPU_HOSTS, as separate local processes, each with the
    host's HOME, its bin/ first on PATH and the variables in its env.json;
  * with $FAKE_TPU_IMAGE (a JSON file, see `make_hosts`): `create` makes
    the slice's hosts (a v3-N has N/8 of them), `delete` wipes them, so a
    re-created slice starts from a fresh disk as after a real preemption.

A simulated host (`make_hosts`) is what a TPU VM image with the
repository already cloned would be: ~/bert_jax holding the repository's
code (links to this checkout), `.venv/bin/python` (this interpreter),
and no-op `git` and `uv` (the code is already at the commit, the
dependencies installed), so that the launcher's real setup script runs
unchanged. Its environment carries what a TPU VM's runtime gives
`jax.distributed.initialize()` with no arguments: the coordinator address
(JAX_COORDINATOR_ADDRESS) and the process count and index (here through
Open MPI's variables, which JAX's cluster detection reads), with one CPU
device per host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = """#!{python}
import sys
sys.path.insert(0, {root!r})
from tests import fake_tpu
sys.exit(fake_tpu.main(sys.argv[1:]))
"""


def install(bin_dir: str) -> str:
  os.makedirs(bin_dir, exist_ok=True)
  exe = os.path.join(bin_dir, "gcloud")
  with open(exe, "w") as f:
    f.write(_SCRIPT.format(python=sys.executable, root=ROOT))
  os.chmod(exe, 0o755)
  return exe


def hosts_of(accelerator: str) -> int:
  """Hosts of a v3 slice: 8 TensorCores (4 chips) a host."""
  return max(1, int(accelerator.split("-")[1]) // 8)


def _executable(path: str, text: str) -> None:
  with open(path, "w") as f:
    f.write(text)
  os.chmod(path, 0o755)


def make_hosts(root: str, count: int, image: dict) -> list[str]:
  """`count` fresh hosts under root; image: coordinator, commit, env."""
  names = []
  for i in range(count):
    name = f"worker-{i}"
    home = os.path.join(root, name)
    shutil.rmtree(home, ignore_errors=True)
    bin_dir = os.path.join(home, "bin")
    repo = os.path.join(home, "bert_jax")
    os.makedirs(bin_dir)
    os.makedirs(os.path.join(repo, ".git"))
    os.makedirs(os.path.join(repo, ".venv", "bin"))
    for entry in ("bert_jax", "configs", "data", "requirements.txt"):
      os.symlink(os.path.join(ROOT, entry), os.path.join(repo, entry))
    _executable(os.path.join(bin_dir, "hostname"), f"#!/bin/sh\necho {name}\n")
    log = os.path.join(home, "shim_calls")
    _executable(os.path.join(bin_dir, "git"),
                f'#!/bin/sh\necho "git $*" >> {log}\n'
                f'if [ "$1" = rev-parse ]; then echo {image["commit"]}; fi\n')
    _executable(os.path.join(bin_dir, "uv"),
                f'#!/bin/sh\necho "uv $*" >> {log}\n')
    _executable(os.path.join(repo, ".venv", "bin", "python"),
                f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    host, port = image["coordinator"].rsplit(":", 1)
    env = {
        **image.get("env", {}),
        "JAX_COORDINATOR_ADDRESS": image["coordinator"],
        "OMPI_MCA_orte_hnp_uri": f"0.0;tcp://{host}:{port}",
        "OMPI_COMM_WORLD_SIZE": str(count),
        "OMPI_COMM_WORLD_RANK": str(i),
        "OMPI_COMM_WORLD_LOCAL_RANK": "0",
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
    }
    with open(os.path.join(home, "env.json"), "w") as f:
      json.dump(env, f)
    names.append(name)
  return names


def _flags(argv):
  return dict(a[2:].split("=", 1) for a in argv if a.startswith("--")
              and "=" in a)


def main(argv: list[str]) -> int:
  with open(os.environ["FAKE_GCLOUD_LOG"], "a") as f:
    f.write(json.dumps(["gcloud", *argv]) + "\n")
  opts = _flags(argv)
  hosts_root = os.environ.get("FAKE_TPU_HOSTS", "")
  image_file = os.environ.get("FAKE_TPU_IMAGE", "")
  if "describe" in argv:
    path = os.environ["FAKE_GCLOUD_STATE"]
    with open(path) as f:
      states = f.read().split()
    if len(states) > 1:  # the next describe answers the next state
      with open(path, "w") as f:
        f.write("\n".join(states[1:]))
    if states[0] == "MISSING":
      print("ERROR: (gcloud.compute.tpus) NOT_FOUND: no such resource",
            file=sys.stderr)
      return 1
    print(states[0])
  elif argv[:2] == ["storage", "cp"]:
    src, dest = [a for a in argv[2:] if not a.startswith("-")]
    if os.environ.get("FAKE_GCS"):
      dest = os.path.join(os.environ["FAKE_GCS"], dest.removeprefix("gs://"))
      os.makedirs(os.path.dirname(dest), exist_ok=True)
      shutil.copy(src, dest)
    else:
      sys.path.insert(0, ROOT)
      from bert_jax import storage  # pylint: disable=g-import-not-at-top
      storage.copy_file(src, dest)
  elif "create" in argv and image_file:
    with open(image_file) as f:
      image = json.load(f)
    make_hosts(hosts_root, hosts_of(opts["accelerator-type"]), image)
  elif "delete" in argv and image_file:
    shutil.rmtree(hosts_root, ignore_errors=True)
    os.makedirs(hosts_root)
  elif "ssh" in argv and hosts_root:
    hosts = sorted(os.listdir(hosts_root))
    if opts["worker"] != "all":
      hosts = [hosts[int(opts["worker"])]]
    procs = []
    for h in hosts:
      home = os.path.join(hosts_root, h)
      env = dict(os.environ, HOME=home,
                 PATH=f"{home}/bin:{os.environ['PATH']}",
                 FAKE_GCLOUD_LOG=os.path.join(home, "gcloud_calls"))
      env_file = os.path.join(home, "env.json")
      if os.path.exists(env_file):
        with open(env_file) as f:
          env.update(json.load(f))
      procs.append(subprocess.Popen(["bash", "-c", opts["command"]],
                                    env=env))
    return max(p.wait() for p in procs)
  return 0
