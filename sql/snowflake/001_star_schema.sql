-- The star schema of the architecture dossier, in ANALYTICS.STAR (Kimball).
--
-- This file is the one truth of the star: paylake.warehouse.star_ddl parses it
-- for the Arrow schemas of the gold Delta tables (lake/gold/<table>), their
-- primary and foreign keys. Idempotent: every object is `if not exists`.
-- paylake.warehouse.snowflake.apply_ddl runs the `create table` statements in
-- the database and schema of the settings (ANALYTICS.STAR by default); the
-- three statements below make the file runnable by hand as well.
--
-- Conventions:
--   * names PascalCase, unquoted (Snowflake stores them upper-case);
--   * surrogate keys are INTEGER (NUMBER(38,0)); natural keys are the OLTP ids,
--     which are internal surrogates, not PII (no names, emails, addresses or
--     card data reach this schema);
--   * amounts are in the reporting currency EUR, NUMBER(18,2);
--   * primary, unique and foreign keys are declared for the BI tools and the
--     reader: Snowflake does not enforce them (only NOT NULL), the loader checks
--     key uniqueness and references before it merges;
--   * facts are pre-aggregated per day: their primary key is their grain.

create database if not exists ANALYTICS;
create schema if not exists ANALYTICS.STAR;
use schema ANALYTICS.STAR;

-- ------------------------------------------------------------------ dimensions

create table if not exists DIM_Date (
    DateKey integer not null comment 'yyyymmdd',
    FullDate date not null,
    Day integer not null comment 'day of the month, 1..31',
    Month integer not null comment '1..12',
    Quarter integer not null comment '1..4',
    Year integer not null,
    IsHoliday boolean not null comment 'a public holiday in at least one served country',
    HolidayCountries varchar comment 'served countries with a public holiday that day, e.g. DE,FR (null: none)',
    IsWeekend boolean not null comment 'Saturday or Sunday',
    constraint PK_DIM_Date primary key (DateKey)
) comment = 'One row per calendar day, with the public holidays of the served countries (FR, DE, GB, US, ES, IT, NL, SE, PL, CH).';

create table if not exists DIM_Customer (
    CustomerKey integer not null comment 'surrogate key of one version of a customer',
    CustomerID integer not null comment 'natural key: the pseudonymous OLTP customer id',
    Segment varchar not null comment 'premium, standard or basic',
    Country varchar(2) not null comment 'ISO 3166-1 alpha-2',
    SignupCohort varchar(7) not null comment 'yyyy-mm of the signup',
    ValidFrom timestamp_ntz not null comment 'UTC start of this version (inclusive)',
    ValidTo timestamp_ntz not null comment 'UTC end of this version (exclusive); 9999-12-31 for the current one',
    IsCurrent boolean not null,
    constraint PK_DIM_Customer primary key (CustomerKey),
    constraint UQ_DIM_Customer_Version unique (CustomerID, ValidFrom)
) comment = 'Customers, slowly changing (type 2): a change of segment or country closes the current version and opens a new one. No PII.';

create table if not exists DIM_Merchant (
    MerchantKey integer not null,
    MerchantID integer not null comment 'natural key: the OLTP merchant id',
    Name varchar not null,
    Industry varchar not null,
    Size varchar not null comment 'small, medium or large',
    Country varchar(2) not null,
    constraint PK_DIM_Merchant primary key (MerchantKey),
    constraint UQ_DIM_Merchant_ID unique (MerchantID)
) comment = 'Merchants (type 1: attributes overwritten in place).';

create table if not exists DIM_Location (
    LocationKey integer not null,
    LocationID integer not null comment 'natural key: the OLTP location id',
    City varchar not null,
    Region varchar not null,
    Country varchar(2) not null,
    constraint PK_DIM_Location primary key (LocationKey),
    constraint UQ_DIM_Location_ID unique (LocationID)
) comment = 'Places where transactions happen (type 1).';

create table if not exists DIM_PaymentMethod (
    PaymentMethodKey integer not null,
    Name varchar not null comment 'the card brand, or the type for methods without a brand',
    Type varchar not null comment 'Credit Card, Debit Card, Wallet or Bank Transfer',
    constraint PK_DIM_PaymentMethod primary key (PaymentMethodKey),
    constraint UQ_DIM_PaymentMethod unique (Name, Type)
) comment = 'Kinds of payment method (brand and type). Payment methods belong to customers: no token, last digits or customer here.';

create table if not exists DIM_Product (
    ProductKey integer not null,
    ProductID integer not null comment 'natural key: the OLTP product id',
    Category varchar not null,
    TaxRate number(5,4) not null comment 'e.g. 0.2000 for 20 %',
    constraint PK_DIM_Product primary key (ProductKey),
    constraint UQ_DIM_Product_ID unique (ProductID)
) comment = 'Products sold by merchants, with their tax rate (type 1).';

-- ------------------------------------------------------------------------ facts

create table if not exists FACT_Revenue (
    DateKey integer not null,
    MerchantKey integer not null,
    LocationKey integer not null,
    ProductKey integer not null,
    PaymentMethodKey integer not null,
    Amount number(18,2) not null comment 'captured amount, EUR',
    TaxAmount number(18,2) not null comment 'EUR',
    FeeAmount number(18,2) not null comment 'EUR',
    RefundAmount number(18,2) not null comment 'amount refunded, EUR',
    TransactionCount integer not null,
    constraint PK_FACT_Revenue primary key (DateKey, MerchantKey, LocationKey, ProductKey, PaymentMethodKey),
    constraint FK_FACT_Revenue_Date foreign key (DateKey) references DIM_Date (DateKey),
    constraint FK_FACT_Revenue_Merchant foreign key (MerchantKey) references DIM_Merchant (MerchantKey),
    constraint FK_FACT_Revenue_Location foreign key (LocationKey) references DIM_Location (LocationKey),
    constraint FK_FACT_Revenue_Product foreign key (ProductKey) references DIM_Product (ProductKey),
    constraint FK_FACT_Revenue_PaymentMethod foreign key (PaymentMethodKey) references DIM_PaymentMethod (PaymentMethodKey)
) comment = 'Revenue per day, merchant, location, product and payment method, in EUR.';

create table if not exists FACT_FraudAnalysis (
    DateKey integer not null,
    CustomerKey integer not null comment 'the customer version valid at the time of the transactions',
    MerchantKey integer not null,
    LocationKey integer not null,
    PaymentMethodKey integer not null,
    FraudCount integer not null comment 'transactions labelled fraudulent',
    FraudAmount number(18,2) not null comment 'EUR',
    TransactionCount integer not null,
    constraint PK_FACT_FraudAnalysis primary key (DateKey, CustomerKey, MerchantKey, LocationKey, PaymentMethodKey),
    constraint FK_FACT_FraudAnalysis_Date foreign key (DateKey) references DIM_Date (DateKey),
    constraint FK_FACT_FraudAnalysis_Customer foreign key (CustomerKey) references DIM_Customer (CustomerKey),
    constraint FK_FACT_FraudAnalysis_Merchant foreign key (MerchantKey) references DIM_Merchant (MerchantKey),
    constraint FK_FACT_FraudAnalysis_Location foreign key (LocationKey) references DIM_Location (LocationKey),
    constraint FK_FACT_FraudAnalysis_PaymentMethod foreign key (PaymentMethodKey) references DIM_PaymentMethod (PaymentMethodKey)
) comment = 'Fraud per day, customer, merchant, location and payment method, in EUR.';

create table if not exists FACT_CustomerSegmentation (
    DateKey integer not null,
    CustomerKey integer not null comment 'the customer version valid at the time of the transactions',
    LocationKey integer not null,
    TransactionCount integer not null,
    TotalSpent number(18,2) not null comment 'EUR',
    constraint PK_FACT_CustomerSegmentation primary key (DateKey, CustomerKey, LocationKey),
    constraint FK_FACT_CustomerSegmentation_Date foreign key (DateKey) references DIM_Date (DateKey),
    constraint FK_FACT_CustomerSegmentation_Customer foreign key (CustomerKey) references DIM_Customer (CustomerKey),
    constraint FK_FACT_CustomerSegmentation_Location foreign key (LocationKey) references DIM_Location (LocationKey)
) comment = 'Spending per day, customer version and location, in EUR.';

create table if not exists FACT_ComplianceAudit (
    DateKey integer not null,
    EventType varchar not null,
    Role varchar not null comment 'database role or actor of the events',
    EventCount integer not null,
    AccessCount integer not null,
    PolicyViolationCount integer not null,
    constraint PK_FACT_ComplianceAudit primary key (DateKey, EventType, Role),
    constraint FK_FACT_ComplianceAudit_Date foreign key (DateKey) references DIM_Date (DateKey)
) comment = 'Audit events per day, event type and role: accesses and policy violations.';
