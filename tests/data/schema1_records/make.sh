set -e
T="data.synthetic_train=512 data.synthetic_test=256 train.batch_size=64 train.eval_batch_size=128 train.max_steps_per_epoch=4 optim.milestones_unit=fraction optim.milestones=[0.5] optim.gammas=[0.2] run.progress=false train.threads=1"
N=/work/schema1env/bin/npas
for seed in 0 1; do
$N train --method unshared --arch wrn-10-1 --dataset synthetic --epochs 2 --seed $seed --out runs/unshared-s$seed $T
$N train --method ssn --arch wrn-10-1 --dataset synthetic --budget 40k --epochs 2 --seed $seed --out runs/ssn-40k-s$seed $T
done
$N train --method hashed --arch wrn-10-1 --dataset synthetic --budget 40k --epochs 2 --seed 0 --out runs/hashed-40k-s0 $T
$N train --method ensemble --opt members=wrn-10-1,wrn-10-1 --arch wrn-10-1 --dataset synthetic --epochs 2 --seed 0 --out runs/ensemble-s0 $T
echo ALLDONE
