"""Admin changelists that stay fast on tables of 100k rows and more: a paginator whose count is
bounded, list filters whose choices do not scan the table, and the mixin that puts them on the
big lists (runs, executions, attempts, events, logs, audit log, deliveries, artifacts).

What makes a Django changelist slow on a big table, and what is done about each:
- `SELECT COUNT(*)` of the filtered list on every page (the paginator), and of the whole table
  (the "N total" link): the paginator counts at most COUNT_CAP + 1 rows and then says "more
  than COUNT_CAP", and `show_full_result_count` is off;
- a `list_filter` on a plain text column (event kind, audit action) runs `SELECT DISTINCT` over
  the whole table to draw its choices: RecentValuesFilter draws them from the newest rows only;
- sorting by a column without an index: `sortable_by` on each admin lists indexed columns only;
- a query per row for a related object in a column: `list_select_related` on each admin, and a
  pinned query count per changelist in the tests (same for N rows and 3N rows).
"""

from __future__ import annotations

from functools import cached_property
from math import ceil
from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest

# Rows counted at most; 100 pages at the admin's 100 rows per page. Deeper pages are OFFSET
# scans that grow with the depth: past this, staff narrow the list with filters or the date.
COUNT_CAP = 10_000


class BoundedCountPaginator(Paginator):
    """A paginator that counts at most COUNT_CAP + 1 rows of the filtered list.

    `count_is_exact` tells the templates (admin/pagination.html, admin/actions.html) whether to
    say "N runs" or "more than 10,000 runs"; beyond the cap, pages stop at the cap.
    """

    count_cap = COUNT_CAP

    @cached_property
    def count(self) -> int:
        qs = self.object_list
        if not isinstance(qs, QuerySet):
            return len(qs)
        # Ids only and no ORDER BY, inside a LIMITed subquery: the database stops after
        # cap + 1 index entries instead of visiting every matching row.
        return qs.order_by().values("pk")[: self.count_cap + 1].count()

    @property
    def count_is_exact(self) -> bool:
        return self.count <= self.count_cap

    @property
    def count_shown(self) -> int:
        return min(self.count, self.count_cap)

    @cached_property
    def num_pages(self) -> int:
        # The last page ends at the cap, not one row past it.
        if self.count == 0 and not self.allow_empty_first_page:
            return 0
        hits = max(1, self.count_shown - self.orphans)
        return ceil(hits / self.per_page)

    def page(self, number: int | str):
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = bottom + self.per_page
        if top + self.orphans >= self.count_shown:
            top = self.count_shown
        return self._get_page(self.object_list[bottom:top], number, self)


class _RowLabel:
    def __init__(self, pk: object, label: str) -> None:
        self.pk, self.label = pk, label

    def __str__(self) -> str:
        return self.label


class BigListAdmin(admin.ModelAdmin):
    """Defaults for the changelist of a table that grows without bound."""

    paginator = BoundedCountPaginator
    # The "N total" next to a filtered count is a second COUNT(*) over the whole table.
    show_full_result_count = False
    list_per_page = 100
    # "Show counts" next to each filter choice is a COUNT per choice over the table.
    show_facets = admin.ShowFacets.NEVER
    # Heavy columns never shown in the list (JSON blobs, log text); the change page loads them.
    list_defer: tuple[str, ...] = ()

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        qs = super().get_queryset(request)
        match = getattr(request, "resolver_match", None)
        if self.list_defer and match is not None and match.url_name.endswith("_changelist"):
            qs = qs.defer(*self.list_defer)
        return qs

    def row_label(self, obj: Any) -> str:
        """How a row's checkbox is labelled for screen readers; str(obj) unless that reads a
        column left out of the list."""
        return str(obj)

    def action_checkbox(self, obj: Any) -> str:
        # Django labels each checkbox with str(obj): for a run that reads the task snapshot,
        # which the list leaves out, and would cost a query per row.
        return super().action_checkbox(_RowLabel(obj.pk, self.row_label(obj)))


class RecentValuesFilter(admin.SimpleListFilter):
    """A filter on a text column without fixed choices (event kind, audit action): the choices
    are the values seen in the newest WINDOW rows, so drawing them reads a bounded number of
    rows instead of `SELECT DISTINCT` over the whole table. The filter itself matches exactly,
    on the whole table; a value chosen earlier stays listed even when no longer recent."""

    field_name = ""
    window = 5000

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        recent = (model_admin.model._default_manager.order_by("-pk")
                  .values_list(self.field_name, flat=True)[: self.window])
        values = {v for v in recent if v}
        if self.value():
            values.add(self.value())
        return [(v, v) for v in sorted(values)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value():
            return queryset.filter(**{self.field_name: self.value()})
        return queryset


def recent_values_filter(field_name: str, title: str) -> type[RecentValuesFilter]:
    """A RecentValuesFilter on `field_name`, for a `list_filter` entry."""
    return type(f"Recent_{field_name}_Filter", (RecentValuesFilter,), {
        "field_name": field_name, "parameter_name": field_name, "title": title})
