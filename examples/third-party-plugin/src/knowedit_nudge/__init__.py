"""An example knowedit-harness plugin: a logit-nudge editing method, a first-token metric and a
small dataset spec."""
