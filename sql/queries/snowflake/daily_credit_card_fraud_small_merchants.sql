-- Fraudulent transactions per day paid by credit card at small merchants.
-- Runs in the star's schema (ANALYTICS.STAR).
select d.FullDate, sum(f.FraudCount)::integer as FraudCount
from FACT_FraudAnalysis f
join DIM_Date d on d.DateKey = f.DateKey
join DIM_PaymentMethod p on p.PaymentMethodKey = f.PaymentMethodKey
join DIM_Merchant m on m.MerchantKey = f.MerchantKey
where p.Type = 'Credit Card'
  and m.Size = 'small'
group by d.FullDate
order by d.FullDate;
