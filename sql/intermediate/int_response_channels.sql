-- One row per experience and contact channel it names (split from the comma list of every slot), with its sentiment.
with responses as (

    select id_experience, canaux_typologie
    from staging.stg_responses
    where canaux_typologie is not null

),

split as (

    select distinct
        id_experience,
        trim(unnest(string_split(canaux_typologie, ','))) as canal
    from responses

),

experiences as (

    select id_experience, ressenti_usager
    from staging.stg_experiences

),

joined as (

    -- the sentiment is joined here, a slice of experiences at a time, not in the mart over all of them
    select split.id_experience, split.canal, experiences.ressenti_usager
    from split
    join experiences using (id_experience)
    where split.canal <> ''

)

select * from joined
