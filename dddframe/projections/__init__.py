"""Projections: read models built from events, kept live by the bus and rebuilt blue/green
from the outbox history.

* :class:`Projection` declares the tables and the handlers; ``module.projection(cls,
  listen={event_name: method})`` binds them (checked at start-up).
* Live: each event is applied in one transaction with its inbox entry and checkpoint
  (:mod:`dddframe.projections.live`), whichever bus delivers it.
* ``app.projections.read(cls)`` gives readers the active generation's tables;
  ``app.projections.status()`` the lag; ``rebuild``/``resume``/``abandon`` the blue/green
  rebuild (:mod:`dddframe.projections.rebuild`), also as ``dddframe projections ...``.
"""

from dddframe.projections.binding import ProjectionBinding
from dddframe.projections.projection import Projection, ProjectionView
from dddframe.projections.rebuild import RebuildProgress, RebuildResult
from dddframe.projections.registry import Projections, RegisteredProjection
from dddframe.projections.status import ProjectionStatus, RebuildStatus

__all__ = [
    "Projection",
    "ProjectionBinding",
    "ProjectionStatus",
    "ProjectionView",
    "Projections",
    "RebuildProgress",
    "RebuildResult",
    "RebuildStatus",
    "RegisteredProjection",
]
