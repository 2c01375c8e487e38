"""Stand-ins the rehearsal of the real path (`rglcd-rehearse`) runs beside its Ray jobs: an
OpenAI-compatible judge server (judge_server.py), ImageReward's isolated environment
(imagereward_env.py, also `make imagereward-env`) and the check run inside it
(imagereward_check.py). Product code, so an installed package rehearses without a checkout."""
