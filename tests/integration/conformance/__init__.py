"""The gateway against what Falco sends and what falcosidekick publishes (real servers)."""
