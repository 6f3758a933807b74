"""The domain event registry and deterministic event ids: defined in ``services.model.registry`` (the
model imports no service), named here too for the shells that already import them from core."""

from services.model.registry import OPENBELL_NAMESPACE, domain_event, event_id_for, new_event, registry

__all__ = ["OPENBELL_NAMESPACE", "domain_event", "event_id_for", "new_event", "registry"]
