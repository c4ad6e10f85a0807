-- Spending per year of premium customers of France, in EUR.
-- Runs in the star's schema (ANALYTICS.STAR). DIM_Customer is type 2 and each
-- fact row references the customer version valid when it happened: joining on
-- the fact's CustomerKey and filtering on that version's Segment and Country
-- counts what customers spent while they were premium and in France (not what
-- today's premium customers spent in earlier years under another segment).
select d.Year, sum(f.TotalSpent)::number(38, 2) as TotalSpent
from FACT_CustomerSegmentation f
join DIM_Date d on d.DateKey = f.DateKey
join DIM_Customer c on c.CustomerKey = f.CustomerKey
where c.Segment = 'premium'
  and c.Country = 'FR'
group by d.Year
order by d.Year;
