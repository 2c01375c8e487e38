"""The reward term of the student loss and what feeds it (paper eq. 10-11, section 4.2).

The reward hooks the task calls each step (hooks.py: the interface and the direct reward;
lrm_hook.py: the latent proxy RM finetuned online, Algorithm 4), the window of asynchronous
expert requests behind the LRM hook (expert_queue.py, sized by expert_window.py; decoding on
the train worker in worker_decode.py), the `reward` and `lrm` sections of the config tree
(config.py) and the warning when the reward service cannot keep up with a step (capacity.py).
Ray enters only where lrm_hook.py builds the reward service's client; the queue takes any
expert with `score_latents` (an in-process one in the unit tests).
"""
