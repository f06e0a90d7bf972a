"""Course threads for OpenWebUI users, created through the proxy's internal act-as listener.

For one user and one course, every module ends as exactly one archived chat whose first
message is the course's. ``provisioner.provision`` holds the convergence algorithm that
makes this true without a lock across processes; ``docs/provisioner.md`` explains it.
"""
