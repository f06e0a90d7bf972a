"""Everything the demo and the browser tests run besides the product itself.

Above all ``demo.idp`` (``owui-demo-idp``), a demo identity provider run as its own process:
anyone may sign in as anyone, which is what a demo needs and what production must never
have. It is therefore never a proxy mode; see ``docs/identity.md``.
"""
