"""Who vouches for a release: keys, signed statements, the governance policy and the status.

``trust`` sits between ``registry`` (the records it talks about) and everything that uses a
release. It imports ``registry`` and the ground floor only, never torch and never the
network: checking who approved a model must work on a machine that will never run one.

    trust.keys        maintainers' keys: generate, import (OpenSSH), list, export, load a signer
    trust.statements  in-toto Statements in DSSE envelopes, signed, stored beside a release
    trust.policy      the versioned governance policy and its chain of signed changes
    trust.status      a release's status computed from verified statements under the policy

See docs/trust.md for the model and what is not built yet.
"""
