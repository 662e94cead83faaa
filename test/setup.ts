import '../local/quietTestMode';
