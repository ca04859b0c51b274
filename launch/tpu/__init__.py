"""Pre-training on Cloud TPU v3 VMs with gcloud: `python -m launch.tpu`.

See `launch/tpu/cli.py` for the subcommands, `recipes.py` for the jobs and
`commands.py` for every gcloud command and the shell it runs on the hosts.
"""
