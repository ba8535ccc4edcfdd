"""The command-line programs: openastro-butler, -demo, -plan, -submit, -report and -status."""
