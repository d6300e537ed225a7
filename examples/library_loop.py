"""Every average, the fixed-batch bank and the one-step probe in your own training loop, then `python -m compare.report
RUN` (README "Use it in your own training loop"). Usage: python examples/library_loop.py [RUN_DIR [ARCH]]; ARCH is
resnet18 (torchvision's; the default) or resnet8 (the digits preset's, far cheaper on a CPU: what the test runs)."""
import itertools, sys, torch, torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset, random_split
from empirical import EMA, SWA, NPoint, TwoPoint, FixedBatchBank, OneStepProbe, RunWriter, WeightAverages, default_plan
from empirical.models import build_model   # torchvision.models.resnet18(num_classes=10) with a 1-channel stem

X, Y = load_digits(return_X_y=True)   # 1,797 8×8 digits standing in for your data set and DataLoader
data = TensorDataset(torch.tensor(X, dtype=torch.float32).view(-1, 1, 8, 8) / 16, torch.tensor(Y))
train, test = random_split(data, [1497, 300], generator=torch.Generator().manual_seed(0))
loader, test_batches = DataLoader(train, 64, shuffle=True, drop_last=True), list(DataLoader(test, 100))
fixed = list(DataLoader(train, 64))[:6]   # un-augmented training batches: 3 for the bank, 3 for BatchNorm statistics
torch.manual_seed(0)
model = build_model(sys.argv[2] if len(sys.argv) > 2 else "resnet18", num_classes=10, in_channels=1)
lr, mu, steps = 0.05, 0.9, 150
opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=mu)
# default_plan: the two-point lags and the dense test evaluation compare.report calibrates on (docs/lightning.md)
avg = WeightAverages(model, [EMA(0.98, start=50), SWA(start=75), NPoint(3, 20), *map(TwoPoint, (10, 20, 30, 40))],
                     eval_every=10, plan=(plan := default_plan(steps, lr, mu)))   # multi-point averages read every 10
bank = FixedBatchBank(fixed[:3], test_batches[:3], train_at=[40, 80, 120], every=5)
probe = OneStepProbe(fixed[3], test_batches[0], lr=lr, momentum=mu, every=10)
run = RunWriter(sys.argv[1] if len(sys.argv) > 1 else None, opt, averages=avg, measurements=[bank, probe],
                bn_batches=fixed[3:])
for step, (x, y) in zip(range(steps), itertools.chain.from_iterable(itertools.repeat(loader))):
    run.measure(step, model)                    # bank and probe on θ_step when due (step = updates done)
    x, y = bank.batch_for(step, (x, y))         # bank batch k is the batch of update train_at[k]
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
    run.train(step, loss.item(), lr)
    avg.update(model, step + 1)                 # every average, after every optimiser step
    if (step + 1) % 10 == 0:                    # raw and each average, BN recomputed on fixed[3:] for all alike
        run.evaluate(step + 1, model, test=test_batches)
    elif plan.is_dense(step + 1):               # the plan's dense window: the test split only
        run.evaluate(step + 1, model, test=test_batches, write=False)
print(run.close())
