-- Tax collected per month by Retail merchants of France, in EUR.
-- Runs in the star's schema (ANALYTICS.STAR); DIM_Merchant is type 1: its current attributes.
select d.Year, d.Month, sum(f.TaxAmount)::number(38, 2) as TaxAmount
from FACT_Revenue f
join DIM_Date d on d.DateKey = f.DateKey
join DIM_Merchant m on m.MerchantKey = f.MerchantKey
where m.Industry = 'Retail'
  and m.Country = 'FR'
group by d.Year, d.Month
order by d.Year, d.Month;
