"""Bulk actions on tasks (SPEC section 10): retry, cancel or purge many in one call."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from services.api.deps import ConnDep, SettingsDep
from services.api.schemas import ERROR_RESPONSES, BulkRequest, BulkResponse
from shared import bulk

router = APIRouter(tags=["tasks"], responses=ERROR_RESPONSES)


@router.post("/tasks/bulk", response_model=BulkResponse)
async def bulk_action(body: BulkRequest, conn: ConnDep, settings: SettingsDep) -> BulkResponse:
    """Retry, cancel or purge up to 10,000 tasks, by id or by filter; each task goes through
    the same transition as the single action. Tasks the action does not apply to are skipped,
    counted by reason; a 400 writes nothing. Needs an API key that may write."""
    result = await bulk.run(
        conn,
        body.action,
        settings,
        ids=body.ids,
        flt=body.filter,
        limit=body.limit,
        cursor=body.cursor,
    )
    return BulkResponse.model_validate(asdict(result))
