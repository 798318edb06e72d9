"""Reading RBAC rules the way the authorizer does, for graders that explain a Role's shape.

Behaviour is always confirmed with SubjectAccessReview (Kube.can); these helpers only say
*which* part of a rule is off, so a message can point at it.
"""

from __future__ import annotations


def rule_covers(rule: dict, resource: str, group: str = "", verb: str | None = None) -> bool:
    """True when one PolicyRule grants `verb` (any verb when None) on `resource` in API `group`."""
    def has(field: str, value: str) -> bool:
        return bool({value, "*"} & set(rule.get(field) or []))

    return has("apiGroups", group) and has("resources", resource) and (verb is None or has("verbs", verb))


def missing_verbs(rules: list[dict], resource: str, verbs, group: str = "") -> list[str]:
    """The verbs in `verbs` that no rule grants on `resource`."""
    return [v for v in verbs if not any(rule_covers(r, resource, group, v) for r in rules)]


def misnamed_resources(rules: list[dict], wrong: tuple[str, ...] = ()) -> list[str]:
    """Resource names the authorizer will never match: not lowercase, or a known singular or
    short name from `wrong` (RBAC wants the lowercase plural, e.g. 'pods', not 'Pod' or 'po')."""
    return [x for r in rules for x in r.get("resources") or [] if x != x.lower() or x in wrong]
