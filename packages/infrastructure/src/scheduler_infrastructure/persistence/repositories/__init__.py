"""One SQL repository per port, each bound to the connection of a unit of work."""

from scheduler_infrastructure.persistence.repositories.api_keys import SqlApiKeyRepository
from scheduler_infrastructure.persistence.repositories.bulk_operations import (
    SqlBulkOperationRepository,
)
from scheduler_infrastructure.persistence.repositories.decisions import SqlDecisionRepository
from scheduler_infrastructure.persistence.repositories.events import SqlRunEventRepository
from scheduler_infrastructure.persistence.repositories.queue_settings import (
    SqlQueueSettingsRepository,
)
from scheduler_infrastructure.persistence.repositories.refresh_tokens import (
    SqlRefreshTokenRepository,
)
from scheduler_infrastructure.persistence.repositories.runs import SqlRunRepository
from scheduler_infrastructure.persistence.repositories.shared_limits import (
    SqlCircuitRepository,
    SqlSharedLimitRepository,
)
from scheduler_infrastructure.persistence.repositories.tasks import SqlTaskRepository
from scheduler_infrastructure.persistence.repositories.teams import SqlTeamRepository
from scheduler_infrastructure.persistence.repositories.templates import SqlTemplateRepository
from scheduler_infrastructure.persistence.repositories.users import SqlUserRepository
from scheduler_infrastructure.persistence.repositories.workers import SqlWorkerRepository

__all__ = [
    "SqlApiKeyRepository",
    "SqlBulkOperationRepository",
    "SqlCircuitRepository",
    "SqlDecisionRepository",
    "SqlQueueSettingsRepository",
    "SqlRefreshTokenRepository",
    "SqlRunEventRepository",
    "SqlRunRepository",
    "SqlSharedLimitRepository",
    "SqlTaskRepository",
    "SqlTeamRepository",
    "SqlTemplateRepository",
    "SqlUserRepository",
    "SqlWorkerRepository",
]
