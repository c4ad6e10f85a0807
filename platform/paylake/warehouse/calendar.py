"""The calendar of the star: public holidays of the served countries and ``DIM_Date``.

Holidays are national public holidays, computed (pure functions, no data
file) from three kinds of rule: a fixed date, an offset from Easter Sunday
(Gregorian, computed), and a weekday on or after a date (e.g. the first Monday
of May, US Thanksgiving) or the last such weekday of a month. Regional
holidays (German Länder, Swiss cantons, Spanish communities), Sundays that
are holidays anyway, and weekend substitutes ("observed" days in GB and the US)
are left out: ``IsHoliday`` marks the day itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa

from paylake.warehouse.star_ddl import arrow_schema

SERVED_COUNTRIES = ("FR", "DE", "GB", "US", "ES", "IT", "NL", "SE", "PL", "CH")
MONDAY, THURSDAY, SATURDAY = 0, 3, 5


def easter_sunday(year: int) -> dt.date:
    """Easter Sunday of the Gregorian calendar (anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    el = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * el) // 451
    month, day = divmod(h + el - 7 * m + 114, 31)
    return dt.date(year, month, day + 1)


@dataclass(frozen=True)
class Fixed:
    """The same date every year (from ``since`` on)."""

    month: int
    day: int
    name: str
    since: int = 1

    def on(self, year: int, easter: dt.date) -> dt.date | None:
        return dt.date(year, self.month, self.day) if year >= self.since else None


@dataclass(frozen=True)
class FromEaster:
    """``days`` after Easter Sunday (negative: before)."""

    days: int
    name: str

    def on(self, year: int, easter: dt.date) -> dt.date | None:
        return easter + dt.timedelta(days=self.days)


@dataclass(frozen=True)
class WeekdayOnOrAfter:
    """The first ``weekday`` (Monday = 0) on or after month/day: the n-th
    weekday of a month is on or after day 1 + 7 (n - 1)."""

    month: int
    day: int
    weekday: int
    name: str

    def on(self, year: int, easter: dt.date) -> dt.date | None:
        start = dt.date(year, self.month, self.day)
        return start + dt.timedelta(days=(self.weekday - start.weekday()) % 7)


@dataclass(frozen=True)
class LastWeekday:
    """The last ``weekday`` (Monday = 0) of a month."""

    month: int
    weekday: int
    name: str

    def on(self, year: int, easter: dt.date) -> dt.date | None:
        first_of_next = dt.date(year + self.month // 12, self.month % 12 + 1, 1)
        last = first_of_next - dt.timedelta(days=1)
        return last - dt.timedelta(days=(last.weekday() - self.weekday) % 7)


Rule = Fixed | FromEaster | WeekdayOnOrAfter | LastWeekday

NEW_YEAR, LABOUR_DAY, CHRISTMAS = Fixed(1, 1, "New Year's Day"), Fixed(5, 1, "Labour Day"), Fixed(12, 25, "Christmas Day")
BOXING_DAY, EPIPHANY = Fixed(12, 26, "St Stephen's Day"), Fixed(1, 6, "Epiphany")
ASSUMPTION, ALL_SAINTS = Fixed(8, 15, "Assumption"), Fixed(11, 1, "All Saints' Day")
GOOD_FRIDAY, EASTER_MONDAY = FromEaster(-2, "Good Friday"), FromEaster(1, "Easter Monday")
ASCENSION, WHIT_MONDAY = FromEaster(39, "Ascension Day"), FromEaster(50, "Whit Monday")

HOLIDAY_RULES: Mapping[str, tuple[Rule, ...]] = {
    "FR": (NEW_YEAR, EASTER_MONDAY, LABOUR_DAY, Fixed(5, 8, "Victory in Europe Day"), ASCENSION, WHIT_MONDAY,
           Fixed(7, 14, "Bastille Day"), ASSUMPTION, ALL_SAINTS, Fixed(11, 11, "Armistice Day"), CHRISTMAS),
    "DE": (NEW_YEAR, GOOD_FRIDAY, EASTER_MONDAY, LABOUR_DAY, ASCENSION, WHIT_MONDAY,
           Fixed(10, 3, "German Unity Day"), CHRISTMAS, BOXING_DAY),
    "GB": (NEW_YEAR, GOOD_FRIDAY, EASTER_MONDAY, WeekdayOnOrAfter(5, 1, MONDAY, "Early May bank holiday"),
           LastWeekday(5, MONDAY, "Spring bank holiday"), LastWeekday(8, MONDAY, "Summer bank holiday"),
           CHRISTMAS, BOXING_DAY),
    "US": (NEW_YEAR, WeekdayOnOrAfter(1, 15, MONDAY, "Martin Luther King Jr. Day"),
           WeekdayOnOrAfter(2, 15, MONDAY, "Washington's Birthday"), LastWeekday(5, MONDAY, "Memorial Day"),
           Fixed(6, 19, "Juneteenth", since=2021), Fixed(7, 4, "Independence Day"),
           WeekdayOnOrAfter(9, 1, MONDAY, "Labor Day"), WeekdayOnOrAfter(10, 8, MONDAY, "Columbus Day"),
           Fixed(11, 11, "Veterans Day"), WeekdayOnOrAfter(11, 22, THURSDAY, "Thanksgiving Day"), CHRISTMAS),
    "ES": (NEW_YEAR, EPIPHANY, GOOD_FRIDAY, LABOUR_DAY, ASSUMPTION, Fixed(10, 12, "National Day"), ALL_SAINTS,
           Fixed(12, 6, "Constitution Day"), Fixed(12, 8, "Immaculate Conception"), CHRISTMAS),
    "IT": (NEW_YEAR, EPIPHANY, EASTER_MONDAY, Fixed(4, 25, "Liberation Day"), LABOUR_DAY,
           Fixed(6, 2, "Republic Day"), ASSUMPTION, ALL_SAINTS, Fixed(12, 8, "Immaculate Conception"), CHRISTMAS,
           BOXING_DAY),
    "NL": (NEW_YEAR, EASTER_MONDAY, Fixed(4, 27, "King's Day", since=2014), Fixed(5, 5, "Liberation Day"),
           ASCENSION, WHIT_MONDAY, CHRISTMAS, BOXING_DAY),
    "SE": (NEW_YEAR, EPIPHANY, GOOD_FRIDAY, EASTER_MONDAY, LABOUR_DAY, ASCENSION, Fixed(6, 6, "National Day"),
           WeekdayOnOrAfter(6, 20, SATURDAY, "Midsummer Day"), WeekdayOnOrAfter(10, 31, SATURDAY, "All Saints' Day"),
           CHRISTMAS, BOXING_DAY),
    "PL": (NEW_YEAR, EPIPHANY, EASTER_MONDAY, LABOUR_DAY, Fixed(5, 3, "Constitution Day"),
           FromEaster(60, "Corpus Christi"), ASSUMPTION, ALL_SAINTS, Fixed(11, 11, "Independence Day"),
           Fixed(12, 24, "Christmas Eve", since=2025), CHRISTMAS, BOXING_DAY),
    # Switzerland: the federal National Day and the holidays of (nearly) every canton.
    "CH": (NEW_YEAR, GOOD_FRIDAY, EASTER_MONDAY, ASCENSION, WHIT_MONDAY, Fixed(8, 1, "Swiss National Day"),
           CHRISTMAS, BOXING_DAY),
}


def holidays(year: int, rules: Mapping[str, tuple[Rule, ...]] = HOLIDAY_RULES) -> dict[dt.date, list[str]]:
    """The public holidays of ``year``: each date with the (sorted) served countries it is a holiday in."""
    easter = easter_sunday(year)
    found: dict[dt.date, set[str]] = {}
    for country, country_rules in rules.items():
        for rule in country_rules:
            day = rule.on(year, easter)
            if day is not None:
                found.setdefault(day, set()).add(country)
    return {day: sorted(found[day]) for day in sorted(found)}


def date_key(day: dt.date) -> int:
    """The DateKey of a day: yyyymmdd as an integer."""
    return day.year * 10000 + day.month * 100 + day.day


def build_dim_date(start: dt.date, end: dt.date) -> pa.Table:
    """``DIM_Date`` for every day from ``start`` to ``end`` (inclusive), in the
    DDL's Arrow schema."""
    if end < start:
        raise ValueError(f"build_dim_date: end {end} is before start {start}")
    days = [start + dt.timedelta(days=n) for n in range((end - start).days + 1)]
    holiday_countries: dict[dt.date, list[str]] = {}
    for year in range(start.year, end.year + 1):
        holiday_countries.update(holidays(year))
    countries = [holiday_countries.get(day) for day in days]
    return pa.table({
        "DateKey": [date_key(day) for day in days],
        "FullDate": days,
        "Day": [day.day for day in days],
        "Month": [day.month for day in days],
        "Quarter": [(day.month - 1) // 3 + 1 for day in days],
        "Year": [day.year for day in days],
        "IsHoliday": [found is not None for found in countries],
        "HolidayCountries": [",".join(found) if found else None for found in countries],
        "IsWeekend": [day.weekday() >= SATURDAY for day in days],
    }, schema=arrow_schema("DIM_Date"))
