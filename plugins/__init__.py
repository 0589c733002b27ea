"""The built-in plugins, installed as `harness_plugins` and registered through the
`knowedit_harness` entry points exactly as a third-party plugin is."""
