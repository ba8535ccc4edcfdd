"""``python -m openastro_parsl.tasks.transient.training``: (re)make the shipped real/bogus weights."""

from .make_weights import main

main()
