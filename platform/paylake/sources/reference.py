"""Reference data of the synthetic payments world: countries, cities,
currencies, industries. Plain data, shared by the generator and its tests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Country:
    code: str
    currency: str
    vat: float  # standard rate of sales tax / VAT
    weight: float  # share of customers
    cities: tuple[tuple[str, str, float, float], ...]  # (city, region, lat, lon)


COUNTRIES: tuple[Country, ...] = (
    Country("FR", "EUR", 0.20, 0.25, (("Paris", "Ile-de-France", 48.8566, 2.3522),
                                      ("Lyon", "Auvergne-Rhone-Alpes", 45.7640, 4.8357),
                                      ("Marseille", "Provence-Alpes-Cote d'Azur", 43.2965, 5.3698),
                                      ("Toulouse", "Occitanie", 43.6047, 1.4442))),
    Country("DE", "EUR", 0.19, 0.18, (("Berlin", "Berlin", 52.5200, 13.4050),
                                      ("Munich", "Bavaria", 48.1351, 11.5820),
                                      ("Hamburg", "Hamburg", 53.5511, 9.9937),
                                      ("Frankfurt", "Hesse", 50.1109, 8.6821))),
    Country("GB", "GBP", 0.20, 0.14, (("London", "England", 51.5072, -0.1276),
                                      ("Manchester", "England", 53.4808, -2.2426),
                                      ("Edinburgh", "Scotland", 55.9533, -3.1883))),
    Country("US", "USD", 0.07, 0.15, (("New York", "New York", 40.7128, -74.0060),
                                      ("San Francisco", "California", 37.7749, -122.4194),
                                      ("Chicago", "Illinois", 41.8781, -87.6298),
                                      ("Austin", "Texas", 30.2672, -97.7431))),
    Country("ES", "EUR", 0.21, 0.08, (("Madrid", "Community of Madrid", 40.4168, -3.7038),
                                      ("Barcelona", "Catalonia", 41.3874, 2.1686))),
    Country("IT", "EUR", 0.22, 0.08, (("Rome", "Lazio", 41.9028, 12.4964),
                                      ("Milan", "Lombardy", 45.4642, 9.1900))),
    Country("NL", "EUR", 0.21, 0.05, (("Amsterdam", "North Holland", 52.3676, 4.9041),)),
    Country("SE", "SEK", 0.25, 0.03, (("Stockholm", "Stockholm", 59.3293, 18.0686),)),
    Country("PL", "PLN", 0.23, 0.02, (("Warsaw", "Masovia", 52.2297, 21.0122),)),
    Country("CH", "CHF", 0.081, 0.02, (("Zurich", "Zurich", 47.3769, 8.5417),)),
)

# Reporting currency is EUR: RateToEUR converts one unit into euros.
CURRENCIES: tuple[tuple[str, str, float], ...] = (
    ("EUR", "Euro", 1.0),
    ("USD", "US Dollar", 0.92),
    ("GBP", "Pound Sterling", 1.17),
    ("SEK", "Swedish Krona", 0.087),
    ("PLN", "Polish Zloty", 0.23),
    ("CHF", "Swiss Franc", 1.04),
)


@dataclass(frozen=True)
class Industry:
    name: str
    log_mean_eur: float  # lognormal amount in EUR: heavy-tailed per industry
    log_sigma: float
    categories: tuple[str, ...]
    reduced_tax: bool = False


INDUSTRIES: tuple[Industry, ...] = (
    Industry("Retail", 3.6, 0.9, ("Home", "Toys", "Books", "Sports")),
    Industry("Grocery", 3.3, 0.6, ("Food", "Beverages", "Household"), reduced_tax=True),
    Industry("Electronics", 4.8, 1.0, ("Phones", "Computers", "Audio", "Accessories")),
    Industry("Travel", 5.5, 0.8, ("Flights", "Hotels", "Rail")),
    Industry("Restaurants", 3.2, 0.5, ("Dining", "Delivery")),
    Industry("Fashion", 4.1, 0.8, ("Apparel", "Shoes", "Bags")),
    Industry("Gaming", 2.8, 1.1, ("Games", "In-game Credits")),
    Industry("Digital Services", 2.6, 0.7, ("Subscriptions", "Software", "Cloud")),
)

SEGMENTS = ("premium", "standard", "basic")
SEGMENT_SHARE = (0.15, 0.55, 0.30)
SEGMENT_DAILY_RATE = (0.6, 0.3, 0.12)  # transactions per customer per day
SEGMENT_SPEND = (1.6, 1.0, 0.7)

PAYMENT_TYPES = ("Credit Card", "Debit Card", "Wallet", "Bank Transfer")
PAYMENT_SHARE = (0.45, 0.30, 0.15, 0.10)
CARD_BRANDS = ("Visa", "Mastercard", "Amex")

DEVICE_KINDS = (("mobile", "iOS"), ("mobile", "Android"), ("desktop", "Windows"), ("desktop", "macOS"),
                ("desktop", "Linux"), ("tablet", "iPadOS"), ("tablet", "Android"))
DEVICE_SHARE = (0.28, 0.32, 0.18, 0.10, 0.02, 0.06, 0.04)

FIRST_NAMES = ("Alice", "Bruno", "Chloe", "David", "Emma", "Farid", "Giulia", "Hugo", "Ines", "Jonas", "Karin",
               "Lucas", "Maya", "Nils", "Olga", "Pablo", "Quentin", "Rosa", "Sven", "Tara", "Ugo", "Vera",
               "Wen", "Xavier", "Yara", "Zoe")
LAST_NAMES = ("Martin", "Bernard", "Muller", "Schmidt", "Smith", "Jones", "Garcia", "Rossi", "Jansen", "Nilsson",
              "Kowalski", "Meier", "Dubois", "Lopez", "Bianchi", "Brown", "Fischer", "Moreau", "Weber", "Taylor")
MERCHANT_WORDS = ("Nova", "Atlas", "Blue", "Urban", "Prime", "Green", "Swift", "Alpine", "Lumen", "Orbit", "Maple",
                  "Cedar", "Harbor", "Summit", "Pixel", "Velvet", "Copper", "Echo", "Nimbus", "Zephyr")
