"""Foundation: jobs, settings, profiles, store, keys, quarantine, device, training loop."""
