"""Who may use OpenWebUI at all: allowed email domains and groups, checked after
authentication and before anything reaches OpenWebUI. Pure functions, tested by a table.

The model is oauth2-proxy's ``--email-domain`` and ``--allowed-group``: an identity passes
when its email is in one of the allowed domains (if any are configured) and it belongs to
at least one allowed group (if any are configured). No rules configured: everyone the
identity source vouches for passes.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.identity import Identity
from proxy.settings import Settings


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an identity may not pass; ``rule`` names the setting, ``reason`` is for the user."""

    rule: str
    reason: str


@dataclass(frozen=True, slots=True)
class AccessRules:
    """The rules one listener applies; empty tuples mean "no rule of that kind"."""

    email_domains: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    @classmethod
    def public(cls, settings: Settings) -> AccessRules:
        return cls(settings.allowed_email_domains, settings.allowed_groups)

    @classmethod
    def internal(cls, settings: Settings) -> AccessRules:
        """An act-as call names a user by email only: the group rule cannot apply there."""
        return cls(settings.allowed_email_domains, ())

    def describe(self) -> list[str]:
        """The rules in words, for the start-up log and the docs."""
        rules = []
        if self.email_domains:
            rules.append(f"email domain in {', '.join(self.email_domains)}")
        if self.groups:
            rules.append(f"member of any of {', '.join(self.groups)}")
        return rules or ["anyone the identity source vouches for"]

    def check(self, identity: Identity) -> Refusal | None:
        """None when ``identity`` may pass, else the first rule it fails."""
        # The reasons never name the person: they are logged (request_failed, the audit),
        # where the person is named apart, by pseudonym when logs are pseudonymised.
        if self.email_domains and not domain_allowed(identity.email, self.email_domains):
            return Refusal(
                "allowed_email_domains",
                f"the email is not in an allowed domain ({', '.join(self.email_domains)})",
            )
        if self.groups and not set(identity.groups) & set(self.groups):
            return Refusal("allowed_groups", "the identity is in none of the allowed groups")
        return None


def domain_allowed(email: str, domains: tuple[str, ...]) -> bool:
    """``email`` (validated, lower-case) is in ``domains`` ("x.edu" exact, "*.x.edu" below).

    The domain is everything after the *last* "@": validated emails have exactly one, and
    reading the last one is what mail systems do should a source ever pass another form.
    """
    domain = email.rpartition("@")[2]
    for rule in domains:
        if rule.startswith("*."):
            if domain.endswith(rule[1:]):  # ".x.edu": a real subdomain, never "evilx.edu"
                return True
        elif domain == rule:
            return True
    return False
